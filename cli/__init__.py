"""`cost-engine`: the command-line client of the Cost Execution Engine's API."""
