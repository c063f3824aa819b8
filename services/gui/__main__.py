from common.service import run
from services.gui.service import main

run("gui", main)
