"""HTTP service: a thin FastAPI layer over :class:`model.estimator.Estimator`."""
