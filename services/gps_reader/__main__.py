from common.service import run
from services.gps_reader.service import main

run("gps_reader", main)
