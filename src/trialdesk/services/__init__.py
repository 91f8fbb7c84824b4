"""One function per user action: checks role and site, runs domain rules, audits, commits."""
