#include "core/json_util.h"

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace qcal {
namespace {

// A SAX handler that builds nothing: it tracks the nesting depth and the keys
// seen in each open object, and stops the parser (by returning false) at the
// first violation. nlohmann's parser is iterative, so even hostile input
// (100k '[') cannot exhaust the stack before the depth check fires.
class StrictnessChecker : public nlohmann::json::json_sax_t {
 public:
  explicit StrictnessChecker(int max_depth) : max_depth_(max_depth) {}

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    keys_.emplace_back();
    is_object_.push_back(true);
    return Enter();
  }
  bool end_object() override {
    keys_.pop_back();
    is_object_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override {
    is_object_.push_back(false);
    return Enter();
  }
  bool end_array() override {
    is_object_.pop_back();
    return true;
  }
  bool key(string_t& key) override {
    if (!keys_.back().insert(key).second) {
      error_ = absl::StrCat("duplicate key \"", key, "\"");
      return false;
    }
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    error_ = absl::StrCat("not valid JSON at byte ", position, ": ", ex.what());
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool Enter() {
    if (static_cast<int>(is_object_.size()) > max_depth_) {
      error_ = absl::StrCat("nested deeper than ", max_depth_, " levels");
      return false;
    }
    return true;
  }

  int max_depth_;
  std::vector<std::set<std::string>> keys_;
  std::vector<bool> is_object_;
  std::string error_;
};

}  // namespace

absl::StatusOr<nlohmann::json> ParseJsonStrict(absl::string_view text,
                                               absl::string_view what,
                                               int max_depth) {
  StrictnessChecker checker(max_depth);
  const bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &checker);
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ",
                     checker.error().empty() ? "not valid JSON"
                                             : checker.error()));
  }
  nlohmann::json value = nlohmann::json::parse(text.begin(), text.end(),
                                               /*cb=*/nullptr,
                                               /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not valid JSON"));
  }
  return value;
}

}  // namespace qcal
