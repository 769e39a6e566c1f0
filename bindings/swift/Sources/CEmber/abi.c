/* SwiftPM needs a source file in a C target; this one also stops a build whose header
 * does not describe the ABI version the Swift layer was written for. */
#include "ember.h"

_Static_assert(EMBER_ABI_VERSION == 1, "the Swift layer (Sources/Ember) targets ember ABI 1");
