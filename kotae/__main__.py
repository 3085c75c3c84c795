from kotae.cli import run

run()
