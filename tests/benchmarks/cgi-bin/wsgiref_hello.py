#!{python}
# The benchmark app as a CGI script through the standard library's
# wsgiref.handlers.CGIHandler (the usual way to run WSGI as CGI).
import sys
sys.path.insert(0, "{apps}")
from wsgiref.handlers import CGIHandler
from benchapp import app
CGIHandler().run(app)
