/* console.c - COM1 and the VGA text screen, as the course kernel prints. */
#include "../course/console.c"
