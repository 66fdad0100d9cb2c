"""What on-call reads: consumer lag with Burrow statuses and the worker's /status page."""
