"""The ``trialdesk`` command line: thin Typer commands over the services."""
