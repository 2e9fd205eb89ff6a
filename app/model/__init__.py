"""The Conv2D GAN: architecture, training, export and loading of shipped generators.

May import ``app.physics``. ``loading`` must never import ``training`` (the service imports ``loading``).
"""
