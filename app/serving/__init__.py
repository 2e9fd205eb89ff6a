"""The HTTP inference service: backends, the dynamic shower batcher, encoders, metrics and the API.

May import ``app.model.loading`` and ``app.physics``; never ``app.model.training``.
"""
