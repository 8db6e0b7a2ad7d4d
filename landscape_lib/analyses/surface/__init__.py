"""Loss surfaces in weight space: directions (``directions``), evaluation of many points
(``evaluate``, planned by ``memory``) and the 1-D / 2-D grids (``grids``)."""
