from kotae.cli import app

app()
