#include "proxy/config/snapshot.h"
