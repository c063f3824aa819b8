from common.service import run
from services.tb_uplink.service import check_credentials, main

run("tb_uplink", main, validate=lambda config: check_credentials(config.tb_uplink))
