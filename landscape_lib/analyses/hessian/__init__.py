"""Hessian spectra: the operator (``operator``), extreme eigenpairs (``lanczos``), trace and
density (``spectrum``), per-layer curvature (``layers``), PyHessian as a cross-check
(``pyhessian_adapter``) and all of them together (``analysis.hessian_analysis``)."""
