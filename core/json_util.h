// Strict JSON parsing for user-supplied text (QuantizationArgs, observer
// kwargs): bounded nesting depth, duplicate keys rejected, no exceptions.
#ifndef QCAL_CORE_JSON_UTIL_H_
#define QCAL_CORE_JSON_UTIL_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace qcal {

// kDefaultMaxJsonDepth bounds the nesting of arrays and objects.
inline constexpr int kDefaultMaxJsonDepth = 32;

// ParseJsonStrict parses `text` as one JSON value. It fails with
// InvalidArgument, naming `what` (e.g. "--args"), when the text is not valid
// JSON, nests deeper than `max_depth`, or repeats a key inside one object.
absl::StatusOr<nlohmann::json> ParseJsonStrict(
    absl::string_view text, absl::string_view what,
    int max_depth = kDefaultMaxJsonDepth);

}  // namespace qcal

#endif  // QCAL_CORE_JSON_UTIL_H_
