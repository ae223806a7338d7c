#include "facework/facework.h"

const char *fw_version(void)
{
    return FW_VERSION;
}
