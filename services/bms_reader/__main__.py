from common.service import run
from services.bms_reader.service import main

run("bms_reader", main)
