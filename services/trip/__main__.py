from common.service import run
from services.trip.service import prepare

run("trip", prepare=prepare)
