"""The Celery side of cachetasks: the app, its two tasks, and the beat, consumer and broker overrides."""
