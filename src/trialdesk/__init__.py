"""trialdesk: runs a randomized, blinded, multi-centre clinical trial."""

__version__ = "0.1.0"
