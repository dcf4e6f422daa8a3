#!/usr/bin/env perl
# The mutation data's reader, for scripts/mutate.sh. The format is described
# at the top of tests/mutations.txt and in docs/testing.md.
#
#   mutations.pl list DATA             one line per mutation, tab-separated:
#                                      name invariant build tests files about
#   mutations.pl check DATA ROOT       one line per mutation: name, then "ok" or
#                                      "broken: why" (each original must occur
#                                      exactly once in ROOT/file)
#   mutations.pl apply DATA ROOT NAME  applies NAME's hunks to the files under
#                                      ROOT; prints the files it changed
#   mutations.pl targets BUILD_DIR     reads ctest --show-only=json-v1 on stdin;
#                                      prints the executables (targets) it runs;
#                                      "?name" for a test whose program is not
#                                      built yet (ctest then gives no command)
#                                      or that runs nothing of the build
#   mutations.pl names                 reads the same; prints the tests' names
#   mutations.pl serial                reads the same; prints 1 if one of the
#                                      tests is RUN_SERIAL, else 0
#   mutations.pl results LOG           reads a ctest log; prints "name status"
#                                      per test (Passed, Skipped, or why it failed)
use strict;
use warnings;

my %BUILDS = map { $_ => 1 } qw(plain asan tsan);

sub fail { print STDERR "mutations.pl: @_\n"; exit 2; }

# Parses DATA into a list of mutations: { name, invariant, build, tests,
# about, line, hunks => [ { file, original, replacement } ] }.
sub parse {
	my ($path) = @_;
	open(my $in, '<', $path) or fail("cannot read $path: $!");
	my (@muts, %seen, $m, $block, $file);
	my $n = 0;
	while (my $line = <$in>) {
		$n++;
		chomp $line;
		if ($line =~ /^\|(.*)$/s) {
			fail("$path:$n: a '|' line outside an original: or replacement: block") unless $block;
			my $h = $m->{hunks}[-1];
			$h->{$block} .= (defined $h->{"${block}_lines"} ? "\n" : '') . $1;
			$h->{"${block}_lines"}++;
			next;
		}
		$block = undef;
		next if $line =~ /^\s*(#.*)?$/;
		if ($line =~ /^\[([A-Za-z0-9._-]+)\]\s*$/) {
			fail("$path:$n: mutation $1 defined twice") if $seen{$1}++;
			$m = { name => $1, line => $n, hunks => [] };
			$file = undef;
			push @muts, $m;
			next;
		}
		fail("$path:$n: expected [name] first") unless $m;
		if ($line =~ /^(invariant|build|tests|about|file):\s*(.*?)\s*$/) {
			if ($1 eq 'file') {
				$file = $2;
			} else {
				fail("$path:$n: $1 given twice in $m->{name}") if defined $m->{$1};
				$m->{$1} = $2;
			}
		} elsif ($line =~ /^original:\s*$/) {
			fail("$path:$n: original: before any file: in $m->{name}") unless defined $file;
			push @{ $m->{hunks} }, { file => $file, original => '', replacement => '' };
			$block = 'original';
		} elsif ($line =~ /^replacement:\s*$/) {
			my $h = $m->{hunks}[-1];
			fail("$path:$n: replacement: without its original: in $m->{name}")
				if !$h || $h->{replacement_seen}++;
			$block = 'replacement';
		} else {
			fail("$path:$n: cannot read '$line'");
		}
	}
	for my $m (@muts) {
		my $where = "$path:$m->{line}: $m->{name}";
		for my $f (qw(invariant build tests about)) {
			fail("$where: no $f:") unless defined $m->{$f} && length $m->{$f};
		}
		fail("$where: build must be plain, asan or tsan") unless $BUILDS{ $m->{build} };
		fail("$where: invariant must start with I1..I6 or F1..F11 (a finding of issue 7)")
			unless $m->{invariant} =~ /^(I[1-6]|F([1-9]|1[01]))\b/;
		fail("$where: no original:/replacement: hunk") unless @{ $m->{hunks} };
		for my $h (@{ $m->{hunks} }) {
			fail("$where: an empty original:") unless length $h->{original};
			fail("$where: an original: without replacement:") unless $h->{replacement_seen};
			fail("$where: a replacement equal to its original") if $h->{original} eq $h->{replacement};
		}
	}
	return @muts;
}

sub slurp {
	my ($path) = @_;
	open(my $in, '<', $path) or return undef;
	local $/;
	my $text = <$in>;
	return $text;
}

sub occurrences {
	my ($text, $needle) = @_;
	my ($count, $at) = (0, 0);
	while (($at = index($text, $needle, $at)) >= 0) {
		$count++;
		$at += length $needle;
	}
	return $count;
}

# Why @m's anchors do not hold under $root, or undef when they do. Hunks on
# one file apply in turn, so a later anchor is looked for in the text the
# earlier ones left.
sub anchors {
	my ($root, $m, $texts) = @_;
	my %text;
	for my $h (@{ $m->{hunks} }) {
		my $f = $h->{file};
		$text{$f} //= slurp("$root/$f");
		return "$f: no such file" unless defined $text{$f};
		my $n = occurrences($text{$f}, $h->{original});
		if ($n != 1) {
			my ($first) = split /\n/, $h->{original};
			return "$f: the original occurs $n times (starting '$first')";
		}
		my $at = index($text{$f}, $h->{original});
		substr($text{$f}, $at, length $h->{original}) = $h->{replacement};
	}
	%$texts = %text if $texts;
	return undef;
}

my $cmd = shift // '';
if ($cmd eq 'list') {
	for my $m (parse(shift)) {
		my %files = map { $_->{file} => 1 } @{ $m->{hunks} };
		print join("\t", $m->{name}, $m->{invariant}, $m->{build}, $m->{tests},
			   join(',', sort keys %files), $m->{about}), "\n";
	}
} elsif ($cmd eq 'check') {
	my ($data, $root) = @ARGV;
	for my $m (parse($data)) {
		my $why = anchors($root, $m);
		print "$m->{name}\t", (defined $why ? "broken: $why" : 'ok'), "\n";
	}
} elsif ($cmd eq 'apply') {
	my ($data, $root, $name) = @ARGV;
	my ($m) = grep { $_->{name} eq $name } parse($data);
	fail("no mutation $name") unless $m;
	my %text;
	my $why = anchors($root, $m, \%text);
	fail("$name: $why") if defined $why;
	for my $f (sort keys %text) {
		open(my $out, '>', "$root/$f") or fail("cannot write $root/$f: $!");
		print $out $text{$f};
		close($out) or fail("cannot write $root/$f: $!");
		print "$f\n";
	}
} elsif ($cmd eq 'targets') {
	require JSON::PP;
	my $build = shift;
	local $/;
	my $json = JSON::PP::decode_json(<STDIN>);
	my %t;
	for my $test (@{ $json->{tests} || [] }) {
		my $built = 0;
		for my $arg (@{ $test->{command} || [] }) {
			next unless index($arg, "$build/") == 0 && $arg =~ m{([^/]+)$};
			$t{$1} = 1;
			$built = 1;
		}
		# not built yet, or a script over the sources (tests/header_test.sh)
		$t{"?$test->{name}"} = 1 unless $built;
	}
	print "$_\n" for sort keys %t;
} elsif ($cmd eq 'names') {
	require JSON::PP;
	local $/;
	my $json = JSON::PP::decode_json(<STDIN>);
	print "$_->{name}\n" for @{ $json->{tests} || [] };
} elsif ($cmd eq 'serial') {
	require JSON::PP;
	local $/;
	my $json = JSON::PP::decode_json(<STDIN>);
	my $serial = 0;
	for my $test (@{ $json->{tests} || [] }) {
		$serial ||= grep { $_->{name} eq 'RUN_SERIAL' && $_->{value} } @{ $test->{properties} || [] };
	}
	print $serial ? "1\n" : "0\n";
} elsif ($cmd eq 'results') {
	my $path = shift;
	open(my $in, '<', $path) or exit 0;
	# "  3/4 Test #15: test_frees .......***Failed    1.77 sec", line by line:
	# a mutated test may print hundreds of MB
	while (my $line = <$in>) {
		next unless $line =~ /^\s*\d+\/\d+ Test\s+#\d+: (\S+) \.*\s*(.*?)\s+[\d.]+ sec$/;
		my ($name, $status) = ($1, $2);
		$status = "Exception: $1" if $status =~ /^(\S+)\*\*\*Exception:$/; # "SIGALRM***Exception:"
		$status =~ s/^\*\*\*//;
		$status =~ s/\s+/ /g;
		$status = 'Skipped' if $status =~ /Skipped|Not Run/;
		print "$name\t$status\n";
	}
} else {
	fail("usage: mutations.pl list|check|apply|targets|names|serial|results ...");
}
