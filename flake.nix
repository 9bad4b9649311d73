{
  description = "odu: a CI runner you attach to";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;
      # The commit odu says it was built from (`odu --version`), and from whose flake it asks a
      # host of another platform to build its runner.
      rev = self.rev or self.dirtyRev or "";

      # `bins`: the binaries built and installed. On Linux they are linked statically (glibc's
      # crt-static): the runner odu uploads then starts on any Linux host of its architecture.
      build =
        pkgs:
        {
          pname,
          bins,
          buildType ? "release",
          description,
        }:
        let
          inherit (pkgs) lib stdenv;
          linux = stdenv.hostPlatform.isLinux;
        in
        pkgs.rustPlatform.buildRustPackage {
          inherit pname version buildType;
          src = lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = lib.concatMap (bin: [
            "--bin"
            bin
          ]) bins;
          # The tests need sshd, network namespaces and root: they run in odu's own CI.
          doCheck = false;
          buildInputs = lib.optionals linux [ pkgs.glibc.static ];
          env = {
            ODU_GIT_REV = rev;
          }
          // lib.optionalAttrs linux {
            RUSTFLAGS = "-C target-feature=+crt-static";
          };
          meta = {
            inherit description;
            homepage = "https://github.com/juspay/odu";
            license = with lib.licenses; [
              mit
              asl20
            ];
            mainProgram = builtins.head bins;
          };
        };

      odu =
        pkgs:
        build pkgs {
          pname = "odu";
          bins = [
            "odu"
            "odu-runner"
          ];
          description = "A CI runner you attach to: runs a just recipe DAG across machines";
        };
      # The runner alone, for hosts: what odu builds on a host of another platform.
      odu-runner =
        pkgs:
        build pkgs {
          pname = "odu-runner";
          bins = [ "odu-runner" ];
          buildType = "runner";
          description = "The lane runner odu starts on a host over ssh";
        };
    in
    {
      packages = forAllSystems (pkgs: {
        default = odu pkgs;
        odu = odu pkgs;
        odu-runner = odu-runner pkgs;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${odu pkgs}/bin/odu";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            rustc
            cargo
            clippy
            rustfmt
            just
            git
            openssh
            cargo-nextest
          ];
        };
      });

      overlays.default = final: _prev: {
        odu = odu final;
        odu-runner = odu-runner final;
      };
    };
}
