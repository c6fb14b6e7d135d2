"""The ceiling page of the HTTP benchmarks: a bare Flask page that renders a template after one
PostgreSQL query, served by gunicorn exactly like the app. Nothing Paydesk-specific runs here
(no sessions, CSRF, security headers or ORM), so no real page can be faster on this machine.

`CEILING_DATABASE_URL` names the database; its `users` table is read (empty is fine).
"""

import os

from flask import Flask, render_template
from jinja2 import DictLoader
from sqlalchemy import create_engine, text

app = Flask(__name__)
engine = create_engine(os.environ["CEILING_DATABASE_URL"], pool_size=8, max_overflow=0)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ceiling</title></head>
<body><main><h1>Ceiling</h1>
<p>The first customer is {{ first or "nobody" }} (id {{ count }}).</p>
<table>{% for n in range(10) %}<tr><td>{{ n }}</td><td>{{ count * n }}</td></tr>{% endfor %}</table>
</main></body></html>"""


app.jinja_loader = DictLoader({"ceiling.html": PAGE})  # compiled once, cached like the app's templates


@app.get("/ceiling")
def ceiling():
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, email FROM users ORDER BY id LIMIT 1")).first()
    return render_template("ceiling.html", count=row[0] if row else 0, first=row[1] if row else None)
