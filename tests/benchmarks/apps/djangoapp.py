"""The realistic-app group, Django side: a view rendering a template.

``/page``   URL routing + Django's template engine (cached loader) over 20 rows,
            through Django's full request/response cycle and default middleware
``/hello``  the readiness probe every server of the benchmark answers

Settings are configured in this module so the benchmark needs no project
tree; DEBUG is off, as in production.
"""
import os

import django
from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path

HERE = os.path.dirname(os.path.abspath(__file__))

ROWS = [{"id": i, "name": f"item {i}", "price": f"{i * 3.25:.2f}", "tags": ["red", "blue"][: i % 3]}
        for i in range(20)]


def page(request):
    return render(request, "page_django.html", {"title": "Inventory", "rows": ROWS})


def hello(request):
    return HttpResponse(b"Hello, world!\n", content_type="text/plain")


urlpatterns = [path("page", page), path("hello", hello)]

settings.configure(
    DEBUG=False,
    SECRET_KEY="benchmark-only-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ],
    INSTALLED_APPS=[],
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [os.path.join(HERE, "templates")]}],
    USE_TZ=True,
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings)

app = get_wsgi_application()
