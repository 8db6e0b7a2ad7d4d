"""Scale-out: train-all and analyze-all on a Ray cluster (`--backend ray`).

`resources` (what one run asks the cluster for), `tasks` (what one Ray task runs, no Ray
import), `ray_backend` (the driver: connect, probe the nodes, submit, one progress bar). Above
`pipeline`, whose functions the tasks call; nothing below imports this package, and nothing
here imports Ray at module level, so the local backend never loads it.
"""
