/* A box's network from C: a bad network mode and a bad allow rule are refused by their
 * setters with a message naming the cause; allow rules without allow-list mode are refused
 * at create; a TCP forward of host port 0 to guest port 8080 reaches busybox httpd in the
 * box (the host port picked is read back, singly and as a list), and the gateway counts
 * the forwarded connection. */
#include "common.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Checks that `call` failed with `code` and a message containing each of `needles`. */
static void expect_message(boxlite_error_t *error, boxlite_error_code_t code, const char *what, const char *const *needles) {
    if (!error) FAIL("%s succeeded; expected error %d", what, (int)code);
    const char *message = boxlite_error_message(error);
    if (boxlite_error_code(error) != code) FAIL("%s: error %d (%s); expected %d", what, (int)boxlite_error_code(error), message, (int)code);
    for (; *needles; needles++)
        if (!strstr(message, *needles)) FAIL("%s: message %s does not say %s", what, message, *needles);
    boxlite_error_free(error);
}
#define EXPECT_MESSAGE(call, code, ...) do { const char *needles_[] = {__VA_ARGS__, NULL}; \
    expect_message((call), (code), #call, needles_); } while (0)

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* GETs / from 127.0.0.1:port into `answer` (NUL-terminated); the number of bytes read, or
 * -1 if the connection failed or was closed before any answer. */
static long http_get(uint16_t port, char *answer, size_t size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) FAIL("socket: %s", strerror(errno));
    struct timeval timeout = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    long got = -1;
    const char request[] = "GET / HTTP/1.0\r\nHost: box\r\n\r\n";
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && write(fd, request, sizeof request - 1) == (ssize_t)(sizeof request - 1)) {
        size_t len = 0;
        ssize_t n;
        while (len < size - 1 && (n = read(fd, answer + len, size - 1 - len)) > 0) len += (size_t)n;
        answer[len] = '\0';
        if (len > 0) got = (long)len;
    }
    close(fd);
    return got;
}

int main(void) {
    boxlite_runtime_t *runtime = test_runtime();
    boxlite_box_options_t *options = NULL;
    boxlite_box_t *box = NULL;
    OK(boxlite_box_options_new(&options));
    OK(boxlite_box_options_set_root_disk(options, test_rootfs(), BOXLITE_DISK_READ_ONLY));

    /* bad input fails at the setter, with the cause (and the fix) in the message */
    EXPECT_MESSAGE(boxlite_box_options_set_network(options, 7), BOXLITE_ERROR_INVALID_ARGUMENT, "7", "BOXLITE_NETWORK_ALLOW_LIST");
    EXPECT_MESSAGE(boxlite_box_options_add_network_allow(options, "10.0.0.1/8"), BOXLITE_ERROR_INVALID_ARGUMENT,
                   "10.0.0.1/8", "prefix length", "10.0.0.0/8");
    EXPECT_MESSAGE(boxlite_box_options_add_network_allow(options, NULL), BOXLITE_ERROR_INVALID_ARGUMENT, "NULL");
    EXPECT_MESSAGE(boxlite_box_options_add_port_forward(options, 2, NULL, 0, 80), BOXLITE_ERROR_INVALID_ARGUMENT, "BOXLITE_PROTOCOL_");
    EXPECT_MESSAGE(boxlite_box_options_add_port_forward(options, BOXLITE_PROTOCOL_TCP, "localhost", 0, 80), BOXLITE_ERROR_INVALID_ARGUMENT,
                   "not an IP address");
    EXPECT_MESSAGE(boxlite_box_options_add_port_forward(options, BOXLITE_PROTOCOL_TCP, NULL, 0, 0), BOXLITE_ERROR_INVALID_ARGUMENT, "guest");
    EXPECT_MESSAGE(boxlite_box_options_add_dns_server(options, "192.0.2.53:0"), BOXLITE_ERROR_INVALID_ARGUMENT, "port 0");

    /* a well-formed rule in the wrong mode is refused at create, naming the mode it needs */
    OK(boxlite_box_options_add_network_allow(options, "pypi.org:443"));
    EXPECT_MESSAGE(boxlite_box_create(&box, runtime, options), BOXLITE_ERROR_INVALID_ARGUMENT, "pypi.org:443", "allow-list");
    CHECK(box == NULL);
    boxlite_box_options_free(options);

    /* host port 0 (picked) on 127.0.0.1 -> guest port 8080 */
    OK(boxlite_box_options_new(&options));
    OK(boxlite_box_options_set_root_disk(options, test_rootfs(), BOXLITE_DISK_READ_ONLY));
    OK(boxlite_box_options_set_network(options, BOXLITE_NETWORK_OUTBOUND));
    OK(boxlite_box_options_add_port_forward(options, BOXLITE_PROTOCOL_TCP, NULL, 0, 8080));
    OK(boxlite_box_create(&box, runtime, options));
    boxlite_box_options_free(options);

    uint16_t port = 0;
    boxlite_network_stats_t stats = BOXLITE_NETWORK_STATS_INIT;
    EXPECT_MESSAGE(boxlite_box_forwarded_port(&port, box, BOXLITE_PROTOCOL_TCP, 8080), BOXLITE_ERROR_INVALID_STATE, "not running");
    EXPECT_MESSAGE(boxlite_box_network_stats(&stats, box), BOXLITE_ERROR_INVALID_STATE, "not running");
    OK(boxlite_box_start(box));

    /* httpd in the foreground of an execution left running */
    boxlite_command_t *command = NULL;
    boxlite_execution_t *httpd = NULL;
    OK(boxlite_command_new(&command, "sh"));
    OK(boxlite_command_add_arg(command, "-c"));
    OK(boxlite_command_add_arg(command, "mkdir -p /tmp/www && echo hello from a box > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"));
    OK(boxlite_box_exec(&httpd, box, command, NULL));
    boxlite_command_free(command);

    /* the port the host picked, singly and as a list */
    OK(boxlite_box_forwarded_port(&port, box, BOXLITE_PROTOCOL_TCP, 8080));
    CHECK(port != 0);
    uint16_t untouched = 1;
    EXPECT_MESSAGE(boxlite_box_forwarded_port(&untouched, box, BOXLITE_PROTOCOL_UDP, 8080), BOXLITE_ERROR_NOT_FOUND, "8080");
    EXPECT_MESSAGE(boxlite_box_forwarded_port(&untouched, box, BOXLITE_PROTOCOL_TCP, 9999), BOXLITE_ERROR_NOT_FOUND, "9999", "8080/tcp");
    CHECK(untouched == 1);
    boxlite_port_forward_list_t *forwards = NULL;
    OK(boxlite_box_port_forwards(&forwards, box));
    size_t count = 0;
    OK(boxlite_port_forward_list_len(&count, forwards));
    CHECK(count == 1);
    boxlite_port_forward_t forward = BOXLITE_PORT_FORWARD_INIT;
    OK(boxlite_port_forward_list_get(&forward, forwards, 0));
    CHECK(forward.protocol == BOXLITE_PROTOCOL_TCP && forward.host_port == port && forward.guest_port == 8080);
    CHECK(forward.host_addr != NULL && strcmp(forward.host_addr, "127.0.0.1") == 0);
    EXPECT_ERROR(boxlite_port_forward_list_get(&forward, forwards, 1), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_port_forward_list_free(forwards);

    /* a plain socket on the host reaches httpd in the box (it may take a moment to listen) */
    char answer[4096];
    long got = -1;
    for (int i = 0; i < 100 && got < 0; i++) {
        got = http_get(port, answer, sizeof answer);
        if (got < 0) sleep_ms(100);
    }
    if (got < 0) FAIL("no HTTP answer on 127.0.0.1:%u (forwarded to guest port 8080) within 10 s", port);
    if (!strstr(answer, " 200 ") || !strstr(answer, "hello from a box")) FAIL("HTTP answer: %s", answer);

    /* the gateway counted it (it rewrites its figures as it goes: wait for them) */
    for (int i = 0; i < 100; i++) {
        OK(boxlite_box_network_stats(&stats, box));
        if (stats.forwarded_connections >= 1 && stats.bytes_out >= (uint64_t)got) break;
        sleep_ms(100);
    }
    if (stats.forwarded_connections < 1 || stats.bytes_out < (uint64_t)got)
        FAIL("network stats: forwarded_connections %llu, bytes_out %llu (the answer was %ld bytes)",
             (unsigned long long)stats.forwarded_connections, (unsigned long long)stats.bytes_out, got);
    CHECK(stats.size == sizeof stats);

    OK(boxlite_execution_kill(httpd));
    boxlite_execution_free(httpd);
    OK(boxlite_box_stop(box));
    EXPECT_MESSAGE(boxlite_box_forwarded_port(&port, box, BOXLITE_PROTOCOL_TCP, 8080), BOXLITE_ERROR_INVALID_STATE, "not running");
    OK(boxlite_box_remove(box, BOXLITE_REMOVE_FORCE));
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}
