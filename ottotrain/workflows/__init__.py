"""What the commands do: fit, cv, blend, predict, evaluate, check, summary, plots, runs, init.

Each workflow reads and checks everything that can fail on user input before it
creates a run directory, then calls the engine through ``ottotrain.engine``.
"""
