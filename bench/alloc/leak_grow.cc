// leak-and-grow: a service whose heap only grows, like a cache that never
// evicts. Each phase builds RECORDS records (a name of 8..200 characters and
// 1..128 numbers, in a std::string and a std::vector), keeps a share of them
// that grows from 0 in the first phase to 1/2 in the last, and frees the
// rest at the phase's end, leaving holes between the records it keeps.
// Usage: leak_grow SCALE (phases; at least 2 for any to be kept). Prints the checksum of the kept
// records.
#include <memory>
#include <string>
#include <vector>

#include "wl.h"

namespace {

constexpr unsigned long RECORDS = 20000;

struct Record {
	std::string name;
	std::vector<uint64_t> values;
};

std::unique_ptr<Record> make_record(wl_rng *rng)
{
	auto r = std::make_unique<Record>();
	r->name.assign(wl_range(rng, 8, 200), static_cast<char>('a' + wl_next(rng) % 26));
	r->values.resize(wl_range(rng, 1, 128));
	for (auto &v : r->values)
		v = wl_next(rng);
	return r;
}

uint64_t read_record(const Record &r)
{
	uint64_t sum = r.name.size() + static_cast<unsigned char>(r.name.back());
	for (uint64_t v : r.values)
		sum += v;
	return wl_mix(sum);
}

} // namespace

int main(int argc, char **argv)
{
	const unsigned long phases = wl_scale(argc, argv, 0, "SCALE");
	wl_rng rng = { 0x1ea6 };
	std::vector<std::unique_ptr<Record>> kept;

	for (unsigned long p = 0; p < phases; p++) {
		std::vector<std::unique_ptr<Record>> passing;
		const uint64_t keep_per_mille = 500 * p / phases;
		for (unsigned long i = 0; i < RECORDS; i++) {
			auto r = make_record(&rng);
			(wl_next(&rng) % 1000 < keep_per_mille ? kept : passing).push_back(std::move(r));
		}
	}
	uint64_t sum = kept.size();
	for (const auto &r : kept)
		sum += read_record(*r);
	wl_print_checksum(sum);
	return 0;
}
