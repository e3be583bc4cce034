/*
 * tern-io: block-device figures from inside the test guest, for the virtio-blk
 * benchmark (tern vs QEMU on the same image). Direct I/O (O_DIRECT), one request
 * in flight, so the figures measure the device path rather than the guest page cache.
 *
 *   tern-io seqwrite DEV MIB     sequential 1 MiB writes, then fdatasync
 *   tern-io seqread  DEV MIB     sequential 1 MiB reads
 *   tern-io randread DEV SECONDS 4 KiB reads at random 4 KiB-aligned offsets
 *
 * Prints one line: TERN-IO test=NAME result=NUMBER unit=MiB/s|IOPS
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fail(const char *what)
{
    perror(what);
    printf("TERN-IO error %s\n", what);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: tern-io seqwrite|seqread DEV MIB | randread DEV SECONDS\n");
        return 2;
    }
    const char *test = argv[1], *dev = argv[2];
    long arg = atol(argv[3]);
    int writing = strcmp(test, "seqwrite") == 0;
    int fd = open(dev, (writing ? O_RDWR : O_RDONLY) | O_DIRECT);
    if (fd < 0)
        return fail("open");
    size_t block = strcmp(test, "randread") == 0 ? 4096 : 1 << 20;
    void *buf;
    if (posix_memalign(&buf, 4096, block))
        return fail("posix_memalign");
    memset(buf, 0x5a, block);
    double t0 = now();
    if (strcmp(test, "randread") == 0) {
        uint64_t size = 0;
        struct stat st;
        if (ioctl(fd, BLKGETSIZE64, &size) && fstat(fd, &st) == 0)
            size = (uint64_t)st.st_size;
        if (size < 4096)
            return fail("device size");
        uint64_t pages = size / 4096, x = 88172645463325252ull, done = 0;
        double end = t0 + arg;
        while (now() < end) {
            for (int i = 0; i < 64; i++) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                if (pread(fd, buf, 4096, (off_t)((x % pages) * 4096)) != 4096)
                    return fail("pread");
                done++;
            }
        }
        printf("TERN-IO test=randread result=%.0f unit=IOPS\n", done / (now() - t0));
    } else {
        for (long i = 0; i < arg; i++) {
            ssize_t n = writing ? pwrite(fd, buf, block, (off_t)i * block) : pread(fd, buf, block, (off_t)i * block);
            if (n != (ssize_t)block)
                return fail(writing ? "pwrite" : "pread");
        }
        if (writing && fdatasync(fd))
            return fail("fdatasync");
        printf("TERN-IO test=%s result=%.1f unit=MiB/s\n", test, arg / (now() - t0));
    }
    return 0;
}
