"""landscape: train grids of models and measure, store and compare their loss landscapes.

Modules by layer, each importing only from its own layer and those before it (checked by
tests/test_layout.py): errors, locations < registry < params, store < data, models, inits,
optim < config < grid < train < analyses < pipeline < scale < commands < cli.
"""
