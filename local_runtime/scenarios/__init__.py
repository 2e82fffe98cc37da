"""Demo scenarios, one module per recommendation type: ORDER, TITLE and run(demo)."""
