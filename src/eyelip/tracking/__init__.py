"""MLflow runs, reports and result tables, and the plots they carry."""
