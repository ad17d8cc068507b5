from dynq.cli import run

run()
