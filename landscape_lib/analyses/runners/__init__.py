"""The code behind each registered analysis (`analyses.registry` names it "module:function"):
each turns (context, parameters) into rows of the store's tables. The numerical work lives in
the modules named after it (hessian, surface, grid_stats, trajectory, attention, paths); these
only wire inputs from the store to those functions and their outputs back to tables."""
