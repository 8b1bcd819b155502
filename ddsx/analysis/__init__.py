"""Covariate-shift analysis (issue 13): what the diffusion denoiser does to the classifier's input.

``noise`` recovers the UNet's noise estimate at t* next to the noise that truly produced x_t,
``metrics`` holds the quantities as torchmetrics metrics (they sum over processes under DDP),
``measure`` runs them over a split for each sigma, ``outputs`` writes the TSV, plots and image grids.
ddsx-analyze (ddsx.cli.analyze) wires them to a Hydra config.
"""
