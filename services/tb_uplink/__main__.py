from common.service import run
from services.tb_uplink.service import check_credentials, prepare

run("tb_uplink", prepare=prepare, validate=lambda config: check_credentials(config.tb_uplink))
