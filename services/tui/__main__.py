from common.service import run
from services.tui.service import add_arguments, main

run("tui", main, add_arguments=add_arguments, quiet=True)
