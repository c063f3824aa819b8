from common.service import run
from services.gui.service import add_arguments, main, require_display

run("gui", main, add_arguments=add_arguments, validate=require_display)
