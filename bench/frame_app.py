"""The production app (wsgi:app) plus one page for the pages benchmark: `/bench/frame`, a customer
page that shows nothing but the site frame (base.html with an empty content block).

It runs everything every customer page runs before and around its own content — the session
cookie, the server-side session check of app.accounts (one query: a session that ended at logout
must not be honoured), Flask-Login, the control-character door, Flask-Limiter, the security headers
of flask-talisman, CSRF token in the frame — and nothing else, so its ratio to the ceiling is the
most any customer page can reach on this stack. Never served outside the benchmark.
"""

from flask import render_template

from app.web.helpers import customer_required
from wsgi import app

FRAME = app.jinja_env.from_string('{% extends "base.html" %}{% block content %}<h1>Frame</h1>{% endblock %}')


@app.get("/bench/frame")
@customer_required
def bench_frame():
    return render_template(FRAME)
