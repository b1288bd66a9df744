"""Multi-year forecasts: sample future careers from any model and score them against what happened."""
