"""The shared package of the Cost Execution Engine: models, executors, stores and the engine logic."""
