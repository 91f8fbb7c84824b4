"""Simulations (numpy): design assessment and forecasts, which import only the domain of ours;
and the whole-trial simulator (:mod:`.trial`), which drives the services like an adapter to
fill a demo or sandbox study with a synthetic trial."""
