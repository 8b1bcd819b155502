"""Hydra multiruns of ddsx: grids as unions of Cartesian products, failure isolation, labels of runs."""
