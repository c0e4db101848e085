"""Retention: rules per category, legal holds, durable timers, deletion and rectification jobs."""
