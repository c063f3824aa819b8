from common.service import run
from services.tb_uplink.service import main

run("tb_uplink", main)
