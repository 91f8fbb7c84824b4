"""Statistics (numpy/scipy): design assessment and the enrolment forecast. They import only
the domain of ours (never services, store or protocol adapters); the demo driver that fills a
study through the services lives in :mod:`trialdesk.demo`."""
