#!{python}
# The benchmark app as a CGI script through bridge, the way README's cgi-bin
# example does it: from bridge import run; run(app).
import sys
sys.path.insert(0, "{apps}")
from bridge import run
from benchapp import app
run(app)
