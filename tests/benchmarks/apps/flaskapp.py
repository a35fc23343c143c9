"""The realistic-app group, Flask side: a page and a JSON endpoint.

``/page``   routing + a Jinja template (compiled once, cached by Flask) over 20 rows
``/json``   routing + ``jsonify`` of a small document
``/hello``  the readiness probe every server of the benchmark answers

What it measures is a server's own cost beside a real framework's: the
page costs the framework a few hundred microseconds, so a server that adds
little shows it here rather than on the 14-byte hello.
"""
from flask import Flask, jsonify, render_template

app = Flask(__name__)

ROWS = [{"id": i, "name": f"item {i}", "price": f"{i * 3.25:.2f}", "tags": ["red", "blue"][: i % 3]}
        for i in range(20)]


@app.route("/page")
def page():
    return render_template("page.html", title="Inventory", rows=ROWS)


@app.route("/json")
def json_doc():
    return jsonify(status="ok", count=len(ROWS), rows=ROWS[:5])


@app.route("/hello")
def hello():
    return "Hello, world!\n", 200, {"Content-Type": "text/plain"}
