"""Physics validation: two-sample metrics (shape MSE, moment errors, classifier AUC, noise floor),
plots and reports comparing generated showers with a reference sample.

May import ``app.physics``; never ``app.model`` or ``app.serving``. ``plots`` is the only matplotlib user.
"""
