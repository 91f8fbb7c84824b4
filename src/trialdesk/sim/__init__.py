"""Simulations (numpy): design assessment and forecasts; imports only the domain of ours."""
