// A multithreaded C++ program whose output does not depend on scheduling
// (tests/preload/run.sh cxx): four threads fill containers and strings,
// pass heap objects to the next thread, which frees them, and leave
// thread_local objects whose destructors run at thread exit.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

constexpr int kThreads = 4;
constexpr int kMessages = 20000;

uint64_t fnv(const void *p, size_t n, uint64_t h = 14695981039346656037ull)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ static_cast<const unsigned char *>(p)[i]) * 1099511628211ull;
	return h;
}

uint64_t fnv(const std::string &s, uint64_t h = 14695981039346656037ull)
{
	return fnv(s.data(), s.size(), h);
}

struct Rng {
	uint64_t s;
	uint64_t next()
	{
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		return s >> 33;
	}
};

// Allocated by one thread, freed by the next; over-aligned, so that the
// aligned operator new and delete are used.
struct alignas(64) Message {
	int from;
	std::string text;
	std::vector<uint32_t> data;
};

struct Mailbox {
	std::mutex lock;
	std::condition_variable ready;
	std::deque<Message *> queue;
};
Mailbox mailboxes[kThreads];

// Sums of what the thread_local destructors saw, added at thread exit.
std::atomic<uint64_t> tls_checksum{0};
std::atomic<int> tls_destroyed{0};

struct ThreadLog {
	std::vector<std::string> lines;
	std::unique_ptr<std::map<int, std::string>> index = std::make_unique<std::map<int, std::string>>();
	~ThreadLog()
	{
		uint64_t h = 0;
		for (const auto &line : lines)
			h += fnv(line);
		for (const auto &[k, v] : *index)
			h += fnv(v, static_cast<uint64_t>(k));
		tls_checksum += h;
		tls_destroyed++;
	}
};
thread_local ThreadLog thread_log;

struct Result {
	uint64_t containers = 0;
	uint64_t received = 0;
	int messages = 0;
};

uint64_t fill_containers(Rng &rng)
{
	std::map<std::string, std::vector<int>> tree;
	std::unordered_map<uint64_t, std::string> hash;
	std::list<std::string> list;
	for (int i = 0; i < 30000; i++) {
		std::string key = "k" + std::to_string(rng.next() % 5000);
		tree[key].push_back(i);
		hash[rng.next() % 20000] = std::string(rng.next() % 100, static_cast<char>('a' + i % 26));
		list.push_back(key + ":" + std::to_string(i));
		if (list.size() > 500)
			list.pop_front();
	}
	for (int i = 0; i < 2000; i++)
		hash.erase(rng.next() % 20000);
	uint64_t h = 0;
	for (const auto &[k, v] : tree)
		h = fnv(v.data(), v.size() * sizeof(int), fnv(k, h));
	for (const auto &[k, v] : hash)
		h += fnv(v, k);
	for (const auto &s : list)
		h = fnv(s, h);
	// Large blocks, beyond the small size classes.
	for (int i = 0; i < 50; i++) {
		size_t n = 4096 + rng.next() % (1 << 20);
		std::unique_ptr<char[]> big(new char[n]);
		for (size_t j = 0; j < n; j += 4096)
			big[j] = static_cast<char>(j >> 12);
		h = fnv(big.get(), 1, h + n);
	}
	return h;
}

void send(int to, Message *m)
{
	Mailbox &box = mailboxes[to];
	{
		std::lock_guard<std::mutex> g(box.lock);
		box.queue.push_back(m);
	}
	box.ready.notify_one();
}

Message *receive(int self)
{
	Mailbox &box = mailboxes[self];
	std::unique_lock<std::mutex> g(box.lock);
	box.ready.wait(g, [&] { return !box.queue.empty(); });
	Message *m = box.queue.front();
	box.queue.pop_front();
	return m;
}

void worker(int self, Result *result)
{
	Rng rng{static_cast<uint64_t>(self) + 1};
	result->containers = fill_containers(rng);
	// The sum over received messages does not depend on their order.
	for (int i = 0; i < kMessages; i++) {
		auto *m = new Message{self, std::string(rng.next() % 200, 'm') + std::to_string(i), {}};
		m->data.resize(rng.next() % 64, static_cast<uint32_t>(i));
		send((self + 1) % kThreads, m);
		Message *got = receive(self);
		result->received += fnv(got->text) + fnv(got->data.data(), got->data.size() * 4) +
				    static_cast<uint64_t>(got->from);
		result->messages++;
		delete got;
		if (i % 100 == 0) {
			thread_log.lines.push_back("message " + std::to_string(i) + " of thread " + std::to_string(self));
			(*thread_log.index)[i] = thread_log.lines.back();
		}
	}
}

} // namespace

int main()
{
	std::vector<Result> results(kThreads);
	std::vector<std::thread> threads;
	for (int t = 0; t < kThreads; t++)
		threads.emplace_back(worker, t, &results[t]);
	for (auto &t : threads)
		t.join();
	for (int t = 0; t < kThreads; t++)
		std::printf("thread %d: containers %016llx, %d messages from thread %d, %016llx\n", t,
			    static_cast<unsigned long long>(results[t].containers), results[t].messages,
			    (t + kThreads - 1) % kThreads, static_cast<unsigned long long>(results[t].received));
	std::printf("thread_local destructors: %d, checksum %016llx\n", tls_destroyed.load(),
		    static_cast<unsigned long long>(tls_checksum.load()));
	return 0;
}
