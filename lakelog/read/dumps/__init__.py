"""Reading dumps lazily and comparing two runs' dumps tensor by tensor, without torch."""
