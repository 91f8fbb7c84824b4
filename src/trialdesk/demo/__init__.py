"""Demo and sandbox data: the whole-trial simulator (:mod:`.trial`), which drives the services
like an adapter (CLI, API) to fill a demo or sandbox study with a synthetic trial. It lives
outside :mod:`trialdesk.stats` so that the statistics import only the domain."""
