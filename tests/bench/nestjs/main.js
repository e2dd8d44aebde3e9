"use strict";
/*
 * A minimal stand-in for the original NestJS API (the0 before the rewrite, api/ at commit 7e3901b)
 * for `make bench BENCH=versus_nestjs`: the same framework and libraries, doing the same work per
 * request on the three routes the bench loads.
 *
 *   GET  /bot/:id     guard: verify the Bearer JWT, one SELECT of the user by id (all columns);
 *                     then a request-scoped service (and controller) are built for the request and
 *                     one SELECT of the bot by (user_id, id); the row as camelCase JSON.
 *   GET  /bot         same guard, then every bot of the user, newest first (no paging), with the
 *                     original's three log lines per call on stdout.
 *   POST /auth/login  body validated against a class-validator DTO by the global ValidationPipe
 *                     (whitelist, forbidNonWhitelisted, transform); SELECT the user by email,
 *                     bcrypt compare (cost 10 hashes), UPDATE last_login_at, sign a JWT (24 h,
 *                     issuer and audience); {success, data: {token, user}, message}.
 *
 * Like the original: Express 5 under @nestjs/platform-express 11, CORS enabled, drizzle-orm 0.29 on
 * postgres.js (pool of 10; drizzle sends unnamed, unprepared statements), every column selected.
 * Plain JavaScript (decorators applied by hand), so no build step. Environment: DATABASE_URL
 * (postgres://...), JWT_SECRET, PORT, HOST (default 127.0.0.1). The schema (schema.sql) is applied
 * at start, as the original runs its migrations.
 */
require("reflect-metadata");
const fs = require("node:fs");
const path = require("node:path");
const {
  Body, Controller, Get, Inject, Injectable, Module, NotFoundException, Param, Post, Scope,
  UnauthorizedException, UseGuards, ValidationPipe,
} = require("@nestjs/common");
const { NestFactory, REQUEST } = require("@nestjs/core");
const { JwtModule, JwtService } = require("@nestjs/jwt");
const { IsEmail, IsNotEmpty, IsString } = require("class-validator");
const bcrypt = require("bcrypt");
const postgres = require("postgres");
const { and, desc, eq } = require("drizzle-orm");
const { drizzle } = require("drizzle-orm/postgres-js");
const { boolean, jsonb, pgTable, timestamp, varchar } = require("drizzle-orm/pg-core");

const decorate = (decorators, target, key, descriptor) => Reflect.decorate(decorators, target, key, descriptor);
const method = (cls, name, decorators) => {
  const proto = cls.prototype;
  Object.defineProperty(proto, name, decorate(decorators, proto, name, Object.getOwnPropertyDescriptor(proto, name)));
};
const param = (index, decorator) => (target, key) => decorator(target, key, index);
const paramTypes = (...types) => Reflect.metadata("design:paramtypes", types);

// -- database: the original's ORM (drizzle on postgres.js), tables as its schema declares them ----

const client = postgres(process.env.DATABASE_URL, { max: 10 });
const db = drizzle(client);
const users = pgTable("users", {
  id: varchar("id", { length: 255 }).primaryKey(),
  username: varchar("username", { length: 255 }).notNull().unique(),
  email: varchar("email", { length: 255 }).notNull().unique(),
  passwordHash: varchar("password_hash", { length: 255 }).notNull(),
  firstName: varchar("first_name", { length: 255 }),
  lastName: varchar("last_name", { length: 255 }),
  isActive: boolean("is_active").default(true).notNull(),
  isEmailVerified: boolean("is_email_verified").default(false).notNull(),
  lastLoginAt: timestamp("last_login_at", { withTimezone: true }),
  metadata: jsonb("metadata").default({}),
  createdAt: timestamp("created_at", { withTimezone: true }).defaultNow().notNull(),
  updatedAt: timestamp("updated_at", { withTimezone: true }).defaultNow().notNull(),
});
const bots = pgTable("bots", {
  id: varchar("id", { length: 255 }).primaryKey(),
  userId: varchar("user_id", { length: 255 }).notNull(),
  customBotId: varchar("custom_bot_id", { length: 255 }).notNull(),
  name: varchar("name", { length: 255 }).notNull(),
  config: jsonb("config").notNull(),
  topic: varchar("topic", { length: 255 }),
  createdAt: timestamp("created_at", { withTimezone: true }).defaultNow().notNull(),
  updatedAt: timestamp("updated_at", { withTimezone: true }).defaultNow().notNull(),
});

const publicUser = (u) => ({
  id: u.id, username: u.username, email: u.email, firstName: u.firstName, lastName: u.lastName,
  isActive: u.isActive, isEmailVerified: u.isEmailVerified,
});

// -- auth --------------------------------------------------------------------------------------------

class AuthService {
  constructor(jwt) { this.jwt = jwt; }

  async validateToken(token) {
    try {
      const payload = this.jwt.verify(token);
      const rows = await db.select().from(users).where(eq(users.id, payload.sub));
      if (rows.length === 0) return { success: false, error: "User not found", data: null };
      if (!rows[0].isActive) return { success: false, error: "User account is inactive", data: null };
      return { success: true, error: null, data: publicUser(rows[0]) };
    } catch {
      return { success: false, error: "Invalid token", data: null };
    }
  }

  async login({ email, password }) {
    try {
      const rows = await db.select().from(users).where(eq(users.email, email));
      if (rows.length === 0) return { success: false, error: "Invalid credentials", data: null };
      const user = rows[0];
      if (!user.isActive) return { success: false, error: "User account is inactive", data: null };
      if (!(await bcrypt.compare(password, user.passwordHash))) {
        return { success: false, error: "Invalid credentials", data: null };
      }
      await db.update(users).set({ lastLoginAt: new Date() }).where(eq(users.id, user.id));
      const token = this.jwt.sign({ sub: user.id, username: user.username, email: user.email });
      return { success: true, error: null, data: { token, user: publicUser(user) } };
    } catch {
      return { success: false, error: "Login failed", data: null };
    }
  }
}
decorate([Injectable({ scope: Scope.DEFAULT }), paramTypes(JwtService)], AuthService);

// The original's guard also accepts "ApiKey <key>" (checked only when there is no Bearer token).
class AuthGuard {
  constructor(auth) { this.auth = auth; }

  async canActivate(context) {
    const request = context.switchToHttp().getRequest();
    const [type, token] = (request.headers.authorization || "").split(" ");
    if (type !== "Bearer" || !token) {
      throw new UnauthorizedException("a Bearer token is required");
    }
    const result = await this.auth.validateToken(token);
    if (!result.success) throw new UnauthorizedException(result.error);
    request.user = { uid: result.data.id, ...result.data, authType: "jwt" };
    return true;
  }
}
decorate([Injectable(), paramTypes(AuthService)], AuthGuard);

class LoginDto {}
decorate([IsEmail(), IsNotEmpty(), Reflect.metadata("design:type", String)], LoginDto.prototype, "email");
decorate([IsString(), IsNotEmpty(), Reflect.metadata("design:type", String)], LoginDto.prototype, "password");

class AuthController {
  constructor(auth) { this.auth = auth; }

  async login(body) {
    const result = await this.auth.login(body);
    if (!result.success) throw new UnauthorizedException(result.error);
    return { success: true, data: result.data, message: "Login successful" };
  }
}
method(AuthController, "login", [Post("login"), param(0, Body()), paramTypes(LoginDto)]);
decorate([Controller("auth"), paramTypes(AuthService)], AuthController);

// -- bots --------------------------------------------------------------------------------------------

class BotRepository {
  async findAll(userId) {
    console.log("findAll for user", userId, typeof userId);
    console.log("querying table bots");
    const rows = await db.select().from(bots).where(eq(bots.userId, userId)).orderBy(desc(bots.createdAt));
    console.log("query done:", rows.length, "records");
    return { success: true, error: null, data: rows.map((r) => ({ id: r.id, ...r })) };
  }

  async findOne(userId, id) {
    const rows = await db.select().from(bots).where(and(eq(bots.userId, userId), eq(bots.id, id)));
    if (rows.length === 0) return { success: false, error: "Not found", data: null };
    return { success: true, error: null, data: { id: rows[0].id, ...rows[0] } };
  }
}
decorate([Injectable()], BotRepository);

// Singletons the original's request-scoped bot service is built with (config validation, custom
// bots, NATS): unused on these routes, but injected into every per-request instance.
class BotValidator {}
decorate([Injectable()], BotValidator);
class CustomBotService {}
decorate([Injectable()], CustomBotService);
class NatsService {}
decorate([Injectable()], NatsService);

class BotService {
  constructor(request, repository, validator, customBots, nats) {
    this.request = request;
    this.repository = repository;
    this.validator = validator;
    this.customBots = customBots;
    this.nats = nats;
  }

  findAll() { return this.repository.findAll(this.request.user.uid); }

  findOne(id) { return this.repository.findOne(this.request.user.uid, id); }
}
decorate([
  Injectable({ scope: Scope.REQUEST }),
  param(0, Inject(REQUEST)),
  paramTypes(Object, BotRepository, BotValidator, CustomBotService, NatsService),
], BotService);

class BotController {
  constructor(bots) { this.bots = bots; }

  async findAll() {
    const result = await this.bots.findAll();
    if (!result.success) throw new NotFoundException(result.error);
    return result.data;
  }

  async findOne(id) {
    const result = await this.bots.findOne(id);
    if (!result.success) throw new NotFoundException(result.error);
    return result.data;
  }
}
method(BotController, "findAll", [Get(), paramTypes()]);
method(BotController, "findOne", [Get(":id"), param(0, Param("id")), paramTypes(String)]);
decorate([Controller("bot"), UseGuards(AuthGuard), paramTypes(BotService)], BotController);

// -- application -------------------------------------------------------------------------------------

class AppModule {}
decorate([Module({
  imports: [JwtModule.register({
    secret: process.env.JWT_SECRET,
    signOptions: { expiresIn: "24h", issuer: "the0-oss-api", audience: "the0-oss-clients" },
  })],
  controllers: [AuthController, BotController],
  providers: [AuthService, AuthGuard, BotRepository, BotValidator, CustomBotService, NatsService, BotService],
})], AppModule);

async function main() {
  await client.unsafe(fs.readFileSync(path.join(__dirname, "schema.sql"), "utf8")).simple();
  const app = await NestFactory.create(AppModule, { logger: ["error", "warn"] });
  app.enableCors({ origin: process.env.FRONTEND_URL || "http://localhost:3001", credentials: true });
  app.useGlobalPipes(new ValidationPipe({ whitelist: true, forbidNonWhitelisted: true, transform: true }));
  const port = Number(process.env.PORT || 3000);
  await app.listen(port, process.env.HOST || "127.0.0.1");
  console.log(`listening on ${port}`);
}

main().catch((error) => {
  console.error("failed to start:", error);
  process.exit(1);
});
